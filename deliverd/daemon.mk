# deliverd daemon part
