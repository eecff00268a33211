
"conflict_lost"lww*status05
	shipmentss1*
statuslost*
pieces0c"0€Ð•ÿ¼18