"""Co-sell connector: keeps CRM opportunities and Partner Center referrals in step."""

__version__ = "0.1.0"
