"""A quality harness: an eval set assembled from registry packages, scorers, and the systems compared.

`python -m eval.assemble` builds the documents; `python -m eval.quality` runs the systems and
prints the table (eval/README.md says what each number means).
"""
