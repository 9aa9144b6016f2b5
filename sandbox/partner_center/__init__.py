"""The imitated Partner Center referrals API (the core)."""
