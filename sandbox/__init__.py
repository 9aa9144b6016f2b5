"""A local HTTPS server that imitates the referrals API, Salesforce and Dataverse.

It is written from the reference documents, not from the connector's models,
so that a modelling mistake on one side fails on the other.
"""
