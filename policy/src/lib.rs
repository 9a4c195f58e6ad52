//! trireme-policy
