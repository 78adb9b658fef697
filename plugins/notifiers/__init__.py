"""The project's own notifiers: ``webhook``, ``slack``, ``pagerduty`` and ``email``.

Each is a :class:`runtime.abc.Notifier` registered under the entry-point group
``sluiceway.plugins`` in the project's ``pyproject.toml``, exactly as a third party registers
its own. The HTTP ones share :mod:`plugins.notifiers.http` (one client session per delivery,
errors built from the status and the host only); what an alert says is rendered from the same
facts by :mod:`plugins.notifiers.facts`. Importing this package imports none of them.
"""
