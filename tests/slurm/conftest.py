# The scripts here are programs that Slurm jobs run (tests/test_slurm.py), never imported by
# pytest: importing one for doctest collection would run its study.
collect_ignore_glob = ["*.py"]
