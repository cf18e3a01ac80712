"""The engine room: sources, tiling, engines, runners and writers. No Qt, no plugins."""
