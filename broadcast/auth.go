package broadcast

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Identity is an authenticated user, from the JWT's claims.
type Identity struct {
	Subject string
	Email   string
	Claims  map[string]any
	// Expires is the token's exp claim (zero when it has none).
	Expires time.Time
}

// Name is what logs call the user: the email claim, else the subject.
func (i Identity) Name() string {
	if i.Email != "" {
		return i.Email
	}
	if i.Subject != "" {
		return i.Subject
	}
	return "anonymous"
}

// Auth checks JWTs (HS256 only; exp and nbf are enforced when present).
// A nil *Auth means authentication is off (ROWCAST_AUTH=off).
type Auth struct {
	secret []byte
	cookie string
	parser *jwt.Parser
}

// NewAuth returns an authenticator for tokens signed with secret.
func NewAuth(secret, cookie string) *Auth {
	if cookie == "" {
		cookie = "token"
	}
	return &Auth{
		secret: []byte(secret),
		cookie: cookie,
		// Pinning the method refuses alg=none and RS/HS confusion.
		parser: jwt.NewParser(jwt.WithValidMethods([]string{"HS256"}), jwt.WithLeeway(5*time.Second)),
	}
}

// ErrNoToken means the request carried no token at all.
var ErrNoToken = errors.New("no token: send the JWT in the cookie, an Authorization: Bearer header, or access_token")

// TokenFrom finds the token: the cookie, else the Authorization header,
// else the access_token query parameter.
func (a *Auth) TokenFrom(r *http.Request) string {
	if c, err := r.Cookie(a.cookie); err == nil && c.Value != "" {
		return c.Value
	}
	if h := r.Header.Get("Authorization"); len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
		return strings.TrimSpace(h[7:])
	}
	return r.URL.Query().Get("access_token")
}

// Authenticate checks the request's token. With a nil Auth every request
// is an anonymous user.
func (a *Auth) Authenticate(r *http.Request) (Identity, error) {
	if a == nil {
		return Identity{}, nil
	}
	return a.Verify(a.TokenFrom(r))
}

// Verify checks one token.
func (a *Auth) Verify(token string) (Identity, error) {
	if a == nil {
		return Identity{}, nil
	}
	if token == "" {
		return Identity{}, ErrNoToken
	}
	claims := jwt.MapClaims{}
	_, err := a.parser.ParseWithClaims(token, claims, func(*jwt.Token) (any, error) { return a.secret, nil })
	if err != nil {
		return Identity{}, fmt.Errorf("invalid token: %w", err)
	}
	id := Identity{Claims: claims}
	id.Subject, _ = claims["sub"].(string)
	id.Email, _ = claims["email"].(string)
	if exp, err := claims.GetExpirationTime(); err == nil && exp != nil {
		id.Expires = exp.Time
	}
	return id, nil
}

// Sign makes a token (used by the demo's login route and by tests).
func (a *Auth) Sign(claims map[string]any) (string, error) {
	return jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims(claims)).SignedString(a.secret)
}

// Cookie is the name of the token cookie.
func (a *Auth) Cookie() string { return a.cookie }
