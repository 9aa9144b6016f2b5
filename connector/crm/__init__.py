"""CRM adapters: Salesforce (simple-salesforce) and Dataverse (httpx) behind one seam."""
