"""An nbclient NotebookClient that does not stall on Output widgets, for every script that executes notebooks.

nbclient mimics a front end's Output widget and echoes each output it captures back to the kernel as a comm message,
sent on the shell socket while nbclient is waiting on that same socket for the cell's execute_reply. A reply that
arrives meanwhile can go unnoticed until the cell timeout expires, and then the run goes on as if nothing happened
(nbclient issue #312). That was `make html` sitting idle for 600 s on notebook 01's first widget cell. The echo is
only for kernel code that reads `Output.outputs` back, which ours never does, so this client leaves it out; the
outputs are still recorded in the saved widget state.
"""

from __future__ import annotations

from nbclient import NotebookClient
from nbclient.output_widget import OutputWidget


class QuietOutputWidget(OutputWidget):
    """nbclient's Output-widget mimic without the echo to the kernel."""

    def sync_state(self) -> None:
        pass


def notebook_client(nb, **kw) -> NotebookClient:
    """NotebookClient(nb, **kw) with the quiet Output widget."""
    client = NotebookClient(nb, **kw)
    client.widget_registry["@jupyter-widgets/output"] = {"OutputModel": QuietOutputWidget}
    return client
