"""HTML reports of compression runs (the report stage's page building, apart from :mod:`onnxprune.report`).

:mod:`.runs` reads and checks run JSON files (``compress --json``) and ``bench --json`` files into
:class:`~.runs.RunView`; :mod:`.plots` draws them with matplotlib as inline SVG; :mod:`.flags`
says why a compressed model may not be faster; :mod:`.page` assembles one self-contained page
(no scripts, nothing fetched). Import :func:`onnxprune.reporting.page.build_html` directly: this
package's ``__init__`` stays light because :mod:`.environment` is imported by every ``compress``.
"""
