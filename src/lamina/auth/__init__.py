"""Who is asking (SigV4), and whether they may (IAM policy evaluation)."""
