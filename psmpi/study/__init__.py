"""Helpers a study script calls: batch templates (``templates``: ``psmpi.prep_batch``), a
program per pset (``command``: ``psmpi.run_command``) and post-processing (``post``:
``psmpi.filter_rows``, ``psmpi.print_table``, ``psmpi.missing_psets``).

May import the foundations and :mod:`psmpi.store` (post-processing reads results files);
never the driver, the backends or the CLI.
"""
