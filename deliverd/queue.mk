# deliverd queue part
