"""The imitated Salesforce REST API subset (with SOQL)."""
