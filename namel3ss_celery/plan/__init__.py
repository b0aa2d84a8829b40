"""What a dispatch produces and what travels: the plan, the step message and envelope, the store's field names."""
