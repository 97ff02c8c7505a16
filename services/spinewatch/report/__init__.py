"""`spinewatch report`: the governance report (HTML, PDF) from files or a running system."""
