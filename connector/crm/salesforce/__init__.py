"""The Salesforce adapter: REST queries and writes, OAuth, SOQL filters, describe types."""
