"""Sphinx configuration: numpydoc API pages and a sphinx-gallery of executed examples.

Build (warnings are errors): python -m sphinx -W --keep-going -b html docs docs/_build/html
"""

import os
import sys

sys.path.insert(0, os.path.abspath(".."))
import skaem  # noqa: E402

project = "skaem"
author = "the skaem developers"
copyright = "2026, the skaem developers"  # noqa: A001
release = version = skaem.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
]

templates_path = ["_templates"]
exclude_patterns = ["_build", "**.ipynb_checkpoints", "design.md", "gallery"]
autosummary_generate = True
autodoc_default_options = {"members": True, "inherited-members": False}
# Members are listed by the class template, not by numpydoc (which would
# add autosummary tables of its own).
numpydoc_show_class_members = False
numpydoc_attributes_as_param_list = True
# Every documented public class and function shows an example: EX01 is
# "no Examples section". Methods (Class.method) are documented on the class.
numpydoc_validation_checks = {"EX01"}
numpydoc_validation_exclude = {r"\.[A-Z]\w*\.\w+$"}

sphinx_gallery_conf = {
    "examples_dirs": "gallery",
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",
    "abort_on_example_error": True,
    "within_subsection_order": "FileNameSortKey",
    "remove_config_comments": True,
    "matplotlib_animations": False,
}

html_theme = "alabaster"
html_static_path = []
html_theme_options = {"description": "Autoregressive Energy Machines for scikit-learn"}
