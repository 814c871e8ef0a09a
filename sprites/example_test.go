package sprites_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"

	"github.com/spritefwd/spritefwd/sprites"
	"github.com/spritefwd/spritefwd/sprites/spritestest"
)

// Dial a port inside a sprite; here the emulator stands in for the API and
// a local echo server for the sprite's program.
func ExampleClient_Dial() {
	echo, _ := net.Listen("tcp", "127.0.0.1:0")
	defer echo.Close()
	go func() {
		c, _ := echo.Accept()
		io.Copy(c, c)
		c.Close()
	}()
	sim := spritestest.NewServer(spritestest.Options{Token: "secret"})
	defer sim.Close()
	sim.Map("db", 5432, echo.Addr().String())

	client, _ := sprites.New(sprites.Options{APIURL: sim.URL, Token: "secret"})
	defer client.Close()
	link, err := client.Dial(context.Background(), "db", "localhost", 5432)
	if err != nil {
		panic(err)
	}
	defer link.CloseNow()
	link.Write([]byte("ping"))
	buf := make([]byte, 4)
	io.ReadFull(link, buf)
	fmt.Println(link.Target(), string(buf))

	_, err = client.Dial(context.Background(), "nope", "localhost", 5432)
	fmt.Println(sprites.IsPermanent(err), errors.Is(err, sprites.ErrNotFound))
	// Output:
	// 10.0.0.1:5432 ping
	// true true
}
