package harness

import (
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Token signs claims with secret (HS256), as rowcast's JWT_SECRET
// authentication expects. Claims without "exp" get one an hour ahead.
func Token(secret string, claims jwt.MapClaims) (string, error) {
	if claims == nil {
		claims = jwt.MapClaims{}
	}
	if _, ok := claims["exp"]; !ok {
		claims["exp"] = time.Now().Add(time.Hour).Unix()
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(secret))
	if err != nil {
		return "", fmt.Errorf("signing a test token: %w", err)
	}
	return s, nil
}
