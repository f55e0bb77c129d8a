<h1>Sign in</h1>
<form method="post">
  <label>Name <input name="name" autocomplete="username"></label>
  <label>Password <input type="password" name="password" autocomplete="current-password"></label>
  <button type="submit">Sign in</button>
</form>
