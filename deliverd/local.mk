# deliverd local part
