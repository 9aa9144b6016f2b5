"""Mapping files: which records take part, and how CRM values become a deal."""
