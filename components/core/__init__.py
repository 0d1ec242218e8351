"""The business rules and contracts every layer may use: schema, config, platform facts, storage, the rules baseline."""
