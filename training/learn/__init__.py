"""Learning: label rows to encoded training rows (``rows``), the losses and the fit loop."""
