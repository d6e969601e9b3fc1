"""Data for ``asyncmail demo``: an example template folder and a recipient list."""
