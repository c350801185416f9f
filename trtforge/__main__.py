from trtforge.core.interrupts import stop_on_signals

stop_on_signals()  # first: a signal while the CLI is imported stops it in one line too
from trtforge.cli import main  # noqa: E402

main()
