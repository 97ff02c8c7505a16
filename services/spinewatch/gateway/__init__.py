"""The HTTP gateway (`spinewatch gateway`): authenticated doors for hospital systems."""
