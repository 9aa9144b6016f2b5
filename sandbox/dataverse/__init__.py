"""The imitated Dynamics 365 / Dataverse Web API."""
