"""Recipe sections: one pydantic model per pipeline stage, each field documented where declared."""
