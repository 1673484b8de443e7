"""`python -m auditlog_service`: the `auditlog` command (how a supervisor starts its workers)."""

from .cli import main

if __name__ == "__main__":
    main()
