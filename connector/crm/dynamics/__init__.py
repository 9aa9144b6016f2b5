"""The Dynamics 365 (Dataverse) adapter: Web API transport, reads, writes, batches, OData filters."""
