"""Each service's HTTP routes and the operations that document them."""
