"""Order-fulfilment saga: events, domain rules, ports, use cases and in-memory adapters."""
