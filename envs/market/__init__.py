"""Market model: price processes, book depth, the venue/index/oracle prices and funding."""
