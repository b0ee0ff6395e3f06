"""Security: API keys and JWTs, tenants and roles, rate limits and quotas, the audit log, retention.

See docs/SECURITY.md for the threat model and README "Security" for every listener and how it is protected.
"""
