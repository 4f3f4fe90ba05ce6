# deliverd remote part
