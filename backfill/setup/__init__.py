"""`backfill setup`: cross-account, cross-region replication set up correctly, and kept that way.

- model.py      the validated settings and every derived name and ARN (pure)
- documents.py  every JSON document, and policy merging and comparison (pure)
- steps.py      the ordered steps with their equivalent `aws` commands (pure): what `plan` prints
- aws.py        clients, identity checks, and AWS errors turned into one-line UserErrors
- resources/  each piece of live state (s3, iam, alert): read it, say how it differs from the plan, write it
- run.py        apply / check / grant-backfill / revoke-backfill / alert over those resources
- cli.py        the typer sub-app
"""
