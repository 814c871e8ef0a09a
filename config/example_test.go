package config_test

import (
	"fmt"

	"github.com/spritefwd/spritefwd/config"
)

func ExampleParseRule() {
	f, err := config.ParseRule("127.0.0.1:8080:web:3000")
	if err != nil {
		panic(err)
	}
	fmt.Println(f.Name, f.Listen, f.Sprite, f.Port)
	// Output: web:3000 127.0.0.1:8080 web 3000
}

func ExampleParse() {
	_, err := config.Parse("spritefwd.yaml", []byte("forwards:\n  - sprite: db\n    prot: 5432\n"))
	fmt.Println(err)
	// Output:
	// spritefwd.yaml:2:5: forward is missing port:; add the port inside the sprite, such as port: 5432
	// spritefwd.yaml:3:5: unknown forward key "prot"; did you mean "port"?
}
