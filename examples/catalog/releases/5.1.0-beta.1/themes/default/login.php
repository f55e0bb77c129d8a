<h1>Sign in</h1>
<form method="post">
  <?php echo acme_csrf_field(); ?>
  <label>Name <input name="name" autocomplete="username"></label>
  <label>Password <input type="password" name="password" autocomplete="current-password"></label>
  <button type="submit">Sign in</button>
</form>
