"""What both stream workers share on the broker: the output producer (`output`), reading a
changelog partition (`changelog_read`), and the one commit order (`checkpoint`)."""
