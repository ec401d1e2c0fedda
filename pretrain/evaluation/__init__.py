"""Matching accuracy of every matcher on the same backbone features of real view pairs (method.md, section
5): the accuracy, its Markdown report and the correspondence picture."""
