"""Follow-up completeness: which scheduled follow-ups are due, received, overdue or lost."""
