"""The three lists (三清单): responsibility, demand and negative lists."""
