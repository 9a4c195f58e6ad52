//! trireme-enforcer library
