"""The sandbox's change events: webhooks, Dataverse posts, Salesforce CDC."""
