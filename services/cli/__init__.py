"""The ``tac8`` command line: look at tac8 and steer it through its files. It imports no
service.

* ``main`` — argument parsing, the command table, ``stop`` / ``pause`` / ``resume`` / ``add``;
  ``init`` — a person's config and queue from the shipped examples;
* ``status`` — the dashboard; ``logs`` — an agent's log as text; ``doctor`` — checks of the
  machine and the install (with ``service_unit``, the systemd unit ``--as-service`` reads,
  and ``supervisor_conf``, supervisord as its conf describes it); ``demo`` (with
  ``demo_agent``) — tac8 end to end in a sandbox;
* ``common`` — task ids and the user's error, for several commands; ``layout`` — text as
  wide as the terminal: wrapped between words, shortened in the middle.

``tac8`` (the console script) and ``python -m services.cli`` both run ``main``.
"""

from services.cli.main import main

__all__ = ["main"]
