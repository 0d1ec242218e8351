"""The labs around the notebooks: receipts that prove a lab was done, and (beside them) chaos scenarios."""
