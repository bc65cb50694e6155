"""The command line: options → a configuration → a run → an exit code. No S3 and no SQL here.

    app.py      assembles the commands (and does nothing else)
    options.py  option declarations shared by several commands, written once (SideOptions …)
    guard.py    one line and exit 2 for what the user must fix; the resume hint
    output.py   the summaries a command ends with, as text or JSON
    copy.py  verify.py  status.py  shards.py (run-shards, copy --state)  setup.py  demo.py

Exit codes: 0 all copied; 1 finished, some versions failed; 2 a user, configuration,
credential or permission error (one line, no traceback); 130 stopped by Ctrl-C.
"""

from backfill.cli.app import app, main

__all__ = ["app", "main"]
