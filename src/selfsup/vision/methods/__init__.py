"""Vision methods: each composes a backbone, heads and a loss over a small shared base."""
