//! Read models built from the ledger event log. See ARCHITECTURE.md.
