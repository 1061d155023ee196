"""Presentation: the HTML report (page), its figures (plots) and Graphviz pictures of graphs and bundles."""
