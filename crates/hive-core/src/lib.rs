//! The hyperhive daemon (work in progress).
