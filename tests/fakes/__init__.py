"""In-memory fakes of the deal core and a CRM, with failure knobs, for engine unit tests."""
