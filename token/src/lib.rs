//! trireme-token
